"""The reconciler: reconcile_once(), retries across passes, and the folder watcher."""
