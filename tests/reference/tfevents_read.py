"""Reads a TensorBoard event file with the `tensorboard` package and prints its scalars as JSON:
{tag: [[step, value], ...]}. Used to check that ccma's event files are read back by TensorBoard."""
import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

acc = EventAccumulator(sys.argv[1])
acc.Reload()
print(json.dumps({tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}))
