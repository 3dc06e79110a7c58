"""Model families built from ctxppl primitives (mixed effects, ...)."""
