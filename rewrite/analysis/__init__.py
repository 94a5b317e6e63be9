"""Analyses built on the engine.

    advisor.py          which layer, which rank: a label-free sweep, its ranking and how sure it is
    advise_measures.py  the advisor's measures of one applied setting (patch space, attainment, leak)
    advise_pictures.py  the advisor's pictures
    rulechange.py       changing a contextual rule (the paper's section 5.3): dissection, interventions, the change
    layersearch.py      which layer holds a rule: changes scaled to one budget, their flip rates
"""
