"""The self-training baseline's offline pseudo labels (Table 6): plan, label, write shards.

`labeller.generate` runs a teacher over a split; `plan` lays out the shards, `labels`
thresholds the teacher's probabilities, `shards` writes each shard once (resumable). The
command line is wss.pseudo_label.
"""
