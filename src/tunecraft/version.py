"""The package version, a leaf module: code that records it (a run's versions) imports it from here, not from the
package root."""

__version__ = "0.1.0"
