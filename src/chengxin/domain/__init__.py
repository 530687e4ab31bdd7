"""chengxin.domain."""
