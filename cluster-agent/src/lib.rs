//! A CARP agent, wire-compatible with UCARP, that moves a virtual IP to a surviving node.
pub mod carp;
