"""chengxin.web."""
