"""The register stage and the registry around it: versions, `@champion`, its history and lineage."""
