"""JSON Schemas (draft 2020-12) of droptune's events, one file per event type, v1.

Each `droptune.<noun>.<verb>.json` describes the whole CloudEvent with its `data`; its `$id` is the
`dataschema` URL the event carries. `common.json` holds the parts several types share. Read them
through `droptune.event_catalog`.
"""
