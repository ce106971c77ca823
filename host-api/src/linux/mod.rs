//! Linux implementations of the kernel traits.
