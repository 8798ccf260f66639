//! Tests of `roomz chat`: the state update alone (`update`), whole screens drawn on
//! ratatui's `TestBackend` (`screens`), and the real binary in a pseudo-terminal against a
//! real server (`pty`).

mod pty;
mod screens;
pub mod support;
mod update;
