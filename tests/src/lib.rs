//! Behaviour, UI and integration tests of the workspace live in `tests/`.
