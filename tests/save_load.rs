//! Saving and loading trained parameters through the generated `save`/`load`: bit-exact
//! round trips, and clear errors for another architecture or a damaged file.

use flowgen::prelude::*;

flowgen::flow! {
    pub struct Moons { dim = 2; repeat(2) { coupling(mask = even, hidden = [8, 8]); coupling(mask = odd, hidden = [8, 8]) }; affine }
}
flowgen::flow! {
    pub struct Wider { dim = 2; repeat(2) { coupling(mask = even, hidden = [16, 16]); coupling(mask = odd, hidden = [16, 16]) }; affine }
}
flowgen::flow! {
    pub struct Generic<const D: usize> { dim = D; affine; coupling(mask = even, hidden = [4]) }
}

fn trained() -> Moons {
    let mut model = Moons::new(&mut flowgen::rand::rngs::StdRng::seed_from_u64(3));
    let mut params = vec![0.0f32; model.param_len()];
    for (k, p) in params.iter_mut().enumerate() {
        *p = ((k as f32) * 0.37).sin() * 0.3;
    }
    model.params_from_slice(&params);
    model
}

fn params<M: Trainable<f32>>(m: &M) -> Vec<u32> {
    let mut p = vec![0.0f32; m.param_len()];
    m.params_to_slice(&mut p);
    p.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn save_then_load_is_bit_exact() {
    let dir = std::env::temp_dir().join(format!("flowgen-save-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("moons.safetensors");
    let model = trained();
    model.save(&path).unwrap();
    let mut fresh = Moons::default();
    assert_ne!(params(&fresh), params(&model));
    fresh.load(&path).unwrap();
    assert_eq!(params(&fresh), params(&model));
    let x = Array2::from_shape_vec((2, 2), vec![0.1f32, 0.2, -1.0, 0.5]).unwrap();
    assert_eq!(
        fresh.log_prob(x.view()).unwrap(),
        model.log_prob(x.view()).unwrap()
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn another_architecture_or_a_damaged_file_is_an_error() {
    let dir = std::env::temp_dir().join(format!("flowgen-mismatch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("moons.safetensors");
    trained().save(&path).unwrap();

    let mut wider = Wider::default();
    let before = params(&wider);
    let err = wider.load(&path).unwrap_err();
    assert!(matches!(err, FlowError::Mismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("hidden = [16, 16]")
            || err.to_string().contains("hidden = [8, 8]"),
        "{err}"
    );
    assert_eq!(
        params(&wider),
        before,
        "a failed load leaves the flow unchanged"
    );

    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = Moons::default().load(&path).unwrap_err();
    assert!(matches!(err, FlowError::Format { .. }), "{err}");
    let err = Moons::default()
        .load(dir.join("missing.safetensors"))
        .unwrap_err();
    assert!(matches!(err, FlowError::Io { .. }), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_architecture_spells_out_every_option() {
    assert_eq!(
        Moons::architecture(),
        "flowgen; dim = 2; base = normal; float = f32; \
         coupling(mask = even, transform = affine, hidden = [8, 8], activation = relu); \
         coupling(mask = odd, transform = affine, hidden = [8, 8], activation = relu); \
         coupling(mask = even, transform = affine, hidden = [8, 8], activation = relu); \
         coupling(mask = odd, transform = affine, hidden = [8, 8], activation = relu); affine"
    );
    assert!(Generic::<3>::architecture().starts_with("flowgen; dim = 3;"));
    assert_ne!(Generic::<3>::architecture(), Generic::<4>::architecture());
}
