//! The `botburrow` operator CLI library (being built; see the issues).
