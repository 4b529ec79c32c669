//! botburrow-runner library (being built; see the issues).
