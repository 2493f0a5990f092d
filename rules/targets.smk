# Targets, all from vitscope.workflow.registry: a rule per figure (`snakemake --cores all
# fig_cls_maps`), per analysis where it has one (fig_cka, table_best_layers), and the local rules.


for _rule, _files in registry.target_rules(config).items():

    rule:
        name:
            _rule
        input:
            _files,
        localrule: True


# Figures (every plot rule) are quick and read small tables, so on a cluster they run on
# the submitting host instead of being submitted.
workflow.localrules(*registry.local_rules())
