"""chengxin.synth."""
