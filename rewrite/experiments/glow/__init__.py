"""The glow world: a contextual rule (lit windows cast a glow) found, probed and changed.

    rule.py    GlowRule (labels, dissection, cause, flip score), RuleRates, the glow model and segmenter
    prober.py  RuleProber: paint where to add or remove the cause, original and changed side by side
"""
