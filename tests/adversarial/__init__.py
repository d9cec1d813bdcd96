"""Faults a hostile environment causes, each caused for real: evicted and flushed stores, full
disks, Redis refusing writes, unreadable files and directories, hostile names and links, the
inotify limit, races in stopping. Each test fails without the fix it covers. Modules by area:
``test_files.py`` (the file system), ``test_live.py`` (Redis under the live parts),
``test_notify.py`` (file notifications), ``test_run.py`` (``agg run`` and its parts)."""
