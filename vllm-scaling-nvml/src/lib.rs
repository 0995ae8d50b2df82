//! vllm-scaling-nvml: filled in by its own issue.
