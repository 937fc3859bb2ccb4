//! Type rules (being written).
