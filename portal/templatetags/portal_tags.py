from django import template

register = template.Library()


@register.filter
def commit_url(function, sha: str) -> str:
    return function.commit_url(sha)


@register.filter
def pretty_json(value) -> str:
    """JSON as the function sent or received it, indented (autoescaped by the template)."""
    import json

    return json.dumps(value, indent=2, sort_keys=False, default=str)
