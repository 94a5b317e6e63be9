"""What an edit is on disk and in settings: edit files, saved-edit folders, solver options and their checks."""
