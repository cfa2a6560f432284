"""A CSV logger that keeps its ``metrics.csv`` across a resume instead of deleting it.

Lightning's CSVLogger removes an existing ``metrics.csv`` when its folder is not empty, so a
resumed run would lose the epochs before the crash. This one keeps the file and its columns, and
:meth:`CSVLogger.drop_rows_from` removes the rows a crashed run logged after its last checkpoint
(the resumed run logs those epochs again).
"""

from __future__ import annotations

import csv
import os

from pytorch_lightning.loggers import CSVLogger as LightningCSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

from fer.run.atomic import atomic_write


class AppendingWriter(ExperimentWriter):
    """Lightning's writer, minus the deletion of an existing ``metrics.csv``."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as handle:
                self.metrics_keys = next(csv.reader(handle), [])

    def drop_rows_from(self, step: int) -> int:
        """Remove the rows (written or pending) logged at ``step`` or later; return how many."""
        pending = len(self.metrics)
        self.metrics = [row for row in self.metrics if row["step"] < step]
        dropped = pending - len(self.metrics)
        if not os.path.isfile(self.metrics_file_path):
            return dropped
        with open(self.metrics_file_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        kept = [row for row in rows if row.get("step") not in (None, "") and int(row["step"]) < step]
        if len(kept) == len(rows):
            return dropped
        with atomic_write(self.metrics_file_path, newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(kept)
        return dropped + len(rows) - len(kept)


class CSVLogger(LightningCSVLogger):
    """``pytorch_lightning.loggers.CSVLogger`` that appends to an existing ``metrics.csv``."""

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def drop_rows_from(self, step: int) -> int:
        return self.experiment.drop_rows_from(step)
