pub use flow_runtime;
