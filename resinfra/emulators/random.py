"""pulumi-random (Terraform-bridged terraform-provider-random): values made once, at create."""

from resinfra.emulators.package import Package, TypeRules

PACKAGE = Package(
    name="random",
    sdk_module="pulumi_random",
    bridged=True,
    # The Terraform provider's ids are not addresses ("none" for a password); the emulator keeps them distinct.
    generated_ids=True,
    types={
        # terraform-provider-random internal/provider/resource_password.go: every argument has
        # RequiresReplace (a new length or alphabet is a new password); result and bcrypt_hash are Sensitive.
        "random:index/randomPassword:RandomPassword": TypeRules(
            force_new=frozenset({"*"}),
            secret_outputs=frozenset({"result", "bcryptHash"}),
        ),
    },
)
