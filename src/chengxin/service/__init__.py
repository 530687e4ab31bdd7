"""chengxin.service."""
