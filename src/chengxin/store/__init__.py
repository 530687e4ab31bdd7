"""chengxin.store."""
