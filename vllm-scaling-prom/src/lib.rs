//! vllm-scaling-prom: filled in by its own issue.
