//! Integration tests of the LogQL parser and printer.

mod conformance;
mod invalid;
mod never_panics;
mod round_trip;
