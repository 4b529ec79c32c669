//! botburrow-devhub library (being built; see the issues).
