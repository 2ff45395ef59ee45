"""Sphinx extension of the companion website: pages need no code from the network.

Jupyter Book always loads sphinx-thebe, whose configuration script (naming
thebe on a CDN, for live code cells this static site does not offer) is
added twice per page and fails with "Identifier 'THEBE_JS_URL' has already
been declared". The pages drop its scripts.
"""


def drop_thebe(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if scripts:
        context["script_files"] = [
            script for script in scripts
            if "thebe" not in str(script).lower()
            and "THEBE" not in str(getattr(script, "attributes", {}).get("body", ""))
        ]


def setup(app):
    app.connect("html-page-context", drop_thebe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
