//! stack.yml (pending).
