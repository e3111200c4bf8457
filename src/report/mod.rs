//! Pictures and logs for people: contact sheets, training curves, TensorBoard event files.
pub mod canvas;
pub mod curves;
pub mod progress;
pub mod sheet;
pub mod tfevents;
