//! Pictures for the examples, as PNG files: scatter plots of points, a density heatmap and
//! loss curves. plotters with its bitmap backend and a font shipped as a crate (DejaVu),
//! so nothing is needed from the system.

use std::error::Error;
use std::path::Path;

use plotters::prelude::*;

/// A rectangle of the plane, `(x_min, x_max, y_min, y_max)`.
pub type Window = (f64, f64, f64, f64);

/// The centres of a `cells × cells` grid over `window`, row-major from the bottom row:
/// where a density is evaluated for [`heatmap`].
pub fn grid_points(window: Window, cells: usize) -> flowgen::ndarray::Array2<f32> {
    let (dx, dy) = (
        (window.1 - window.0) / cells as f64,
        (window.3 - window.2) / cells as f64,
    );
    flowgen::ndarray::Array2::from_shape_fn((cells * cells, 2), |(k, c)| {
        let (row, col) = (k / cells, k % cells);
        let v = if c == 0 {
            window.0 + (col as f64 + 0.5) * dx
        } else {
            window.2 + (row as f64 + 0.5) * dy
        };
        v as f32
    })
}

/// Makes the text font available (once per process).
pub fn init_fonts() -> Result<(), Box<dyn Error>> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| "the DejaVu font could not be read")?;
    Ok(())
}

/// Two scatter plots side by side: `left` and `right` point sets, same window.
pub fn scatter_pair(
    path: &Path,
    window: Window,
    (left_title, left): (&str, &[(f64, f64)]),
    (right_title, right): (&str, &[(f64, f64)]),
) -> Result<(), Box<dyn Error>> {
    let root = BitMapBackend::new(path, (1200, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    for (panel, (title, points, color)) in panels.iter().zip([
        (left_title, left, RGBColor(31, 119, 180)),
        (right_title, right, RGBColor(214, 39, 40)),
    ]) {
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(window.0..window.1, window.2..window.3)?;
        chart.configure_mesh().light_line_style(WHITE).draw()?;
        chart.draw_series(
            points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|&(x, y)| Circle::new((x, y), 1, color.mix(0.35).filled())),
        )?;
    }
    root.present()?;
    Ok(())
}

/// A heatmap of `density` (row-major, `cells × cells`, over `window`, row 0 at the
/// bottom), with the `viridis` colour map on a linear scale from 0 to (nearly) its maximum, and
/// optionally the outline of a rectangle (a support's boundary) in white.
pub fn heatmap(
    path: &Path,
    title: &str,
    window: Window,
    cells: usize,
    density: &[f64],
    outline: Option<Window>,
) -> Result<(), Box<dyn Error>> {
    let root = BitMapBackend::new(path, (700, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(window.0..window.1, window.2..window.3)?;
    chart.configure_mesh().disable_mesh().draw()?;
    // Colours saturate at the 99.5th percentile, so one sharp peak does not wash out the rest.
    let mut finite: Vec<f64> = density.iter().copied().filter(|v| v.is_finite()).collect();
    finite.sort_by(f64::total_cmp);
    let max = finite
        .get(finite.len() * 995 / 1000)
        .copied()
        .unwrap_or(1.0)
        .max(1e-300);
    let (dx, dy) = (
        (window.1 - window.0) / cells as f64,
        (window.3 - window.2) / cells as f64,
    );
    chart.draw_series((0..cells * cells).map(|k| {
        let (row, col) = (k / cells, k % cells);
        let (x0, y0) = (window.0 + col as f64 * dx, window.2 + row as f64 * dy);
        let value = density[k];
        let level = if value.is_finite() {
            (value / max).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let color = ViridisRGB::get_color(level);
        Rectangle::new([(x0, y0), (x0 + dx, y0 + dy)], color.filled())
    }))?;
    if let Some((x0, x1, y0, y1)) = outline {
        let corners = vec![(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)];
        chart.draw_series(std::iter::once(PathElement::new(
            corners,
            WHITE.stroke_width(2),
        )))?;
    }
    root.present()?;
    Ok(())
}

/// Densities side by side, one panel per `(title, density)` (each row-major, `cells ×
/// cells`, over `window`, row 0 at the bottom, as for [`heatmap`]), all on one linear
/// `viridis` scale from 0 to the first panel's 99.5th percentile (values above saturate), so
/// a reference density in the first panel and estimates of it beside it compare directly.
// Only the variational example draws these: the others would warn of dead code.
#[allow(dead_code)]
pub fn heatmap_row(
    path: &Path,
    window: Window,
    cells: usize,
    panels: &[(&str, &[f64])],
) -> Result<(), Box<dyn Error>> {
    let width = 600 * panels.len().max(1) as u32;
    let root = BitMapBackend::new(path, (width, 580)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut reference: Vec<f64> = panels
        .first()
        .map(|(_, d)| d.iter().copied().filter(|v| v.is_finite()).collect())
        .unwrap_or_default();
    reference.sort_by(f64::total_cmp);
    let max = reference
        .get(reference.len() * 995 / 1000)
        .copied()
        .unwrap_or(1.0)
        .max(1e-300);
    let (dx, dy) = (
        (window.1 - window.0) / cells as f64,
        (window.3 - window.2) / cells as f64,
    );
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (area, (title, density)) in areas.iter().zip(panels) {
        let mut chart = ChartBuilder::on(area)
            .caption(*title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(window.0..window.1, window.2..window.3)?;
        chart.configure_mesh().disable_mesh().draw()?;
        chart.draw_series((0..cells * cells).map(|k| {
            let (row, col) = (k / cells, k % cells);
            let (x0, y0) = (window.0 + col as f64 * dx, window.2 + row as f64 * dy);
            let value = density.get(k).copied().unwrap_or(f64::NAN);
            let level = if value.is_finite() {
                (value / max).clamp(0.0, 1.0)
            } else {
                0.0
            };
            Rectangle::new(
                [(x0, y0), (x0 + dx, y0 + dy)],
                ViridisRGB::get_color(level).filled(),
            )
        }))?;
    }
    root.present()?;
    Ok(())
}

/// A normalised 2-D histogram of `points` on the `cells × cells` grid over `window` (the
/// layout of [`grid_points`]): each cell's count over `n · cell area`, an estimate of the
/// density the points were drawn from. Points outside the window count in `n` only.
// Only the variational example draws these: the others would warn of dead code.
#[allow(dead_code)]
pub fn histogram(points: &[(f64, f64)], window: Window, cells: usize) -> Vec<f64> {
    let (dx, dy) = (
        (window.1 - window.0) / cells as f64,
        (window.3 - window.2) / cells as f64,
    );
    let mut counts = vec![0.0; cells * cells];
    for &(x, y) in points {
        let (col, row) = (((x - window.0) / dx).floor(), ((y - window.2) / dy).floor());
        if (0.0..cells as f64).contains(&col) && (0.0..cells as f64).contains(&row) {
            counts[row as usize * cells + col as usize] += 1.0;
        }
    }
    let scale = 1.0 / (points.len().max(1) as f64 * dx * dy);
    counts.iter_mut().for_each(|c| *c *= scale);
    counts
}

/// Loss curves: `(name, points)` each, `x` the step.
pub fn curves(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> Result<(), Box<dyn Error>> {
    let root = BitMapBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let finite = series
        .iter()
        .flat_map(|(_, s)| s.iter())
        .filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in finite {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = 0.05 * (y_max - y_min).max(1e-3);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max, (y_min - pad)..(y_max + pad))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(y_label)
        .draw()?;
    let palette = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
    ];
    for ((name, points), color) in series.iter().zip(palette.iter().cycle()) {
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                points
                    .iter()
                    .copied()
                    .filter(|(x, y)| x.is_finite() && y.is_finite()),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// `(step, mean of the last `width` finite losses)`: a training curve without the noise of
/// single batches.
pub fn moving_average(losses: &[f64], width: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(losses.len());
    let mut window = std::collections::VecDeque::with_capacity(width);
    let mut sum = 0.0;
    for (step, &l) in losses.iter().enumerate() {
        if !l.is_finite() {
            continue;
        }
        window.push_back(l);
        sum += l;
        if window.len() > width {
            sum -= window.pop_front().unwrap_or(0.0);
        }
        out.push(((step + 1) as f64, sum / window.len() as f64));
    }
    out
}
