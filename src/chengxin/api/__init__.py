"""chengxin.api."""
