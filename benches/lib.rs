//! Shared fixtures for the criterion benchmarks in this folder.
