//! Integration tests for `lattice-registration`: the public API used the way a bridge uses it.

mod round_trip;
