"""Send the process's logs to a file, for interactive commands whose screen is the conversation."""
import logging
import sys
from pathlib import Path

# On screen only what the person must act on; the file keeps every line at the configured level.
SCREEN_LEVEL = logging.ERROR


def logs_to_file(path):
    """Move the root logger's console output to `path` (created with its folder), keeping formatter and filters.

    The console handlers stay, raised to ERROR, so a crash is still seen. Returns the file's Path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    consoles = [h for h in root.handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
                and getattr(h, "stream", None) in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)]
    to_file = logging.FileHandler(path, encoding="utf-8")
    template = consoles[0] if consoles else None
    if template is not None:
        # The same redaction filter and line format as the console: the file is no less careful.
        to_file.setFormatter(template.formatter)
        for log_filter in template.filters:
            to_file.addFilter(log_filter)
    to_file.setLevel(template.level if template is not None else logging.NOTSET)
    root.addHandler(to_file)
    for handler in consoles:
        handler.setLevel(max(handler.level, SCREEN_LEVEL))
    return path
