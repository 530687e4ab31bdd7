"""chengxin.engine."""
