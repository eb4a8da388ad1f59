"""Running student code: `runner` (trusted parent) starts `child` (untrusted) in its own process."""
