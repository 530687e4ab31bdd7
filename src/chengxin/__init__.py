"""chengxin: an accountable social credit system."""
