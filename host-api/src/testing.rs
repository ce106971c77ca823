//! A recording fake of the kernel traits, for unit tests.
