//! OS-specific isolation for askee tasks. Filled in by the sandbox issue; the
//! crate exists now so that the workspace layout is final.
