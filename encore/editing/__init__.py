"""The statistics and edit rules: key second moments, keys, targets, closed-form updates, the batch loop, snapshots."""
