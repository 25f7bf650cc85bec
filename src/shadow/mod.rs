//! The shadow document engine: AWS IoT merge, delta and metadata semantics (pure, no I/O).
