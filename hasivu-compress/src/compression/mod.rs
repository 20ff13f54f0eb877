//! Response compression (being built).
