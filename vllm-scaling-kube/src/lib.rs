//! vllm-scaling-kube: filled in by its own issue.
