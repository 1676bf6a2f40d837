"""The PWA: page views, templates, ES modules, the service worker and the manifest."""
