"""The resinfra CrossGuard policy pack: wires the plain rules in resinfra_policies/ to pulumi-policy."""

from __future__ import annotations

from collections.abc import Callable

from pulumi_policy import EnforcementLevel, PolicyConfigSchema, PolicyPack, ReportViolation, ResourceValidationArgs, ResourceValidationPolicy
from resinfra_policies.common import Context, stack_of_urn
from resinfra_policies.registry import POLICIES, Level, PolicySpec

LEVELS = {Level.MANDATORY: EnforcementLevel.MANDATORY, Level.ADVISORY: EnforcementLevel.ADVISORY}


def validator(spec: PolicySpec) -> Callable[[ResourceValidationArgs, ReportViolation], None]:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        context = Context(
            stack=stack_of_urn(args.urn),
            provider_props=dict(args.provider.props) if args.provider is not None else {},
            config=dict(args.get_config()),
        )
        for message in spec.check(args.resource_type, args.props, context):
            report_violation(message, None)

    return validate


def policy(spec: PolicySpec) -> ResourceValidationPolicy:
    schema = None
    if spec.name == "vm-size-allow-list":
        schema = PolicyConfigSchema(properties={"allowedSizes": {"type": "object"}})
    return ResourceValidationPolicy(
        name=spec.name,
        description=spec.description,
        enforcement_level=LEVELS[spec.level],
        validate=validator(spec),
        config_schema=schema,
    )


if __name__ == "__main__":
    PolicyPack(name="resinfra-policies", policies=[policy(spec) for spec in POLICIES])
