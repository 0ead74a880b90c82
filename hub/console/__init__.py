"""The console at /console: server-rendered pages for the people who run the hub
(docs/console.md). Pages call hub.services and hub.archive; HTML lives only here."""
