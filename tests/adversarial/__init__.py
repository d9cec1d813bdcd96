"""Faults a hostile environment causes, each caused for real: evicting, evicted, flushed and full
stores, a server that is not Redis, a socket directory another user planted, full disks, Redis
refusing writes, unreadable files and directories, hostile names and links, the inotify limit,
races in stopping. Each test fails without the fix it covers. Modules by area: ``test_redis.py``
(the Redis agg is given), ``test_files.py`` (the file system), ``test_live.py`` (Redis under the
live parts), ``test_notify.py`` (file notifications), ``test_run.py`` (``agg run`` and its parts),
``test_search_kill.py`` (``kill -9`` while the search index is built)."""
