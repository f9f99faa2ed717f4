"""Coverage-guided fuzz targets for every parser that reads bytes from a server or a repository
(issue 18); docs/fuzzing.md says how to run them and what they found."""
