//! botburrow-coordinator library (being built; see the issues).
