"""The config loader: one test per kind of mistake, the seed's configs, overrides, the assembled schema."""

import json

import jsonschema
import pytest
import yaml

import bfcnn
from bfcnn.config import config_schema, load_config
from bfcnn.plugins.seed_format import from_seed
from bfcnn.errors import BfcnnError, ConfigError
from bfcnn.registry import hookimpl

# The original project's README examples, assembled into one pipeline config, exactly as written there.
SEED_CONFIG = {
    "model": {
        "levels": 6, "filters": 16, "no_layers": 5, "min_value": 0, "max_value": 255, "kernel_size": 3,
        "type": "resnet", "batchnorm": True, "stop_grads": False, "activation": "relu",
        "local_normalization": -1, "output_multiplier": 1.0, "kernel_regularizer": "l1",
        "final_activation": "tanh", "input_shape": ["?", "?", 1], "kernel_initializer": "glorot_normal",
    },
    "train": {
        "epochs": 20, "total_steps": -1, "iterations_choice": [1], "checkpoints_to_keep": 3,
        "checkpoint_every": 10000, "visualization_number": 5, "visualization_every": 100,
        "random_batch_iterations": 20, "random_batch_size": [512, 512, 3], "random_batch_min_difference": 0.01,
        "optimizer": {"decay_rate": 0.9, "decay_steps": 50000, "learning_rate": 0.001,
                      "gradient_clipping_by_norm": 1.0},
    },
    "loss": {"hinge": 2.5, "mae_multiplier": 1.0, "regularization": 0.01},
    "dataset": {
        "batch_size": 16, "min_value": 0, "max_value": 255, "clip_value": True, "random_blur": True,
        "color_mode": "grayscale", "subsample_size": -1, "random_invert": False, "random_rotate": 0.314,
        "random_up_down": True, "random_left_right": True, "dataset_shape": [256, 768],
        "input_shape": [256, 256, 1], "additional_noise": [5, 10, 20], "multiplicative_noise": [0.1, 0.15, 0.2],
        "directory": "/media/data1_4tb/datasets/KITTI/data/depth/raw_image_values/",
    },
}


def problems_of(config):
    with pytest.raises(ConfigError) as error:
        load_config(config)
    return error.value.problems


def test_valid_config_passes_unchanged(tiny_config):
    assert load_config(tiny_config) == tiny_config


def test_reads_yaml_and_json_files(tmp_path, tiny_config):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny_config))
    (tmp_path / "c.json").write_text(json.dumps(tiny_config))
    assert load_config(tmp_path / "c.yaml") == load_config(tmp_path / "c.json") == tiny_config


def test_value_out_of_range_names_its_path(tiny_config):
    tiny_config["model"]["filters"] = -3
    assert problems_of(tiny_config) == ["model.filters: -3 is less than the minimum of 1"]


def test_unknown_type_suggests_the_closest_and_lists_known(tiny_config):
    tiny_config["noise"] = {"type": "gausian"}
    [problem] = problems_of(tiny_config)
    assert problem.startswith("noise.type: 'gausian' is not a known noise; did you mean 'additive_gaussian'?")
    assert "subsample" in problem


def test_unknown_key_suggests_the_closest(tiny_config):
    tiny_config["model"]["filtres"] = 8
    assert problems_of(tiny_config) == ["model: unknown key 'filtres'; did you mean 'filters'?"]


def test_unknown_section_is_reported(tiny_config):
    tiny_config["trian"] = {}
    assert problems_of(tiny_config) == ["(top level): unknown key 'trian'; did you mean 'train'?"]


def test_missing_type_is_reported(tiny_config):
    del tiny_config["loss"]["type"]
    tiny_config["loss"]["foo"] = 1  # a mapping without type that is not the seed's loss either
    problems = problems_of(tiny_config)
    assert any(p.startswith("loss") for p in problems)


def test_wrong_value_type_is_reported(tiny_config):
    tiny_config["train"]["total_steps"] = "many"
    assert problems_of(tiny_config) == ["train.total_steps: 'many' is not of type 'integer'"]


def test_every_error_is_reported_in_one_go(tiny_config):
    tiny_config["model"]["filters"] = 0
    tiny_config["noise"]["type"] = "nosie"
    tiny_config["train"]["optimizer"]["learning_rate"] = -1
    paths = {p.split(":")[0] for p in problems_of(tiny_config)}
    assert paths == {"model.filters", "noise.type", "train.optimizer.learning_rate"}


def test_nested_component_specs_are_validated(tiny_config):
    tiny_config["noise"] = [{"type": "additive_gaussian", "sigma": 10}, {"type": "subsample", "factor": 3}]
    [problem] = problems_of(tiny_config)
    assert problem.startswith("noise.choices.1.factor")


def test_noise_list_is_a_random_choice(tiny_config):
    tiny_config["noise"] = [{"type": "additive_gaussian", "sigma": 10}, {"type": "subsample", "factor": 2}]
    config = load_config(tiny_config)
    assert config["noise"]["type"] == "choice" and len(config["noise"]["choices"]) == 2


def test_malformed_files_are_clear_errors(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model: {type: dncnn\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad_yaml)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(bad_json)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listed)
    with pytest.raises(BfcnnError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_is_read_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("model: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(evil)


def test_overrides_set_dotted_keys_as_yaml_values(tiny_config):
    config = load_config(tiny_config, ["model.filters=12", "train.optimizer.learning_rate=0.01",
                                       "noise.sigma_range=[5, 10]"])
    assert config["model"]["filters"] == 12
    assert config["train"]["optimizer"]["learning_rate"] == 0.01
    assert config["noise"]["sigma_range"] == [5, 10]
    with pytest.raises(BfcnnError, match="dotted.key=value"):
        load_config(tiny_config, ["nonsense"])


def test_overrides_index_lists_and_never_replace_a_value_silently(tiny_config):
    tiny_config["noise"] = [{"type": "additive_gaussian", "sigma": 25}, {"type": "subsample", "factor": 2}]
    config = load_config(tiny_config, ["noise.1.factor=4", "dataset.input_shape.0=24"])
    assert config["noise"]["choices"][1]["factor"] == 4
    assert config["noise"]["choices"][0]["sigma"] == 25  # the rest of the list is kept
    assert config["dataset"]["input_shape"] == [24, 16, 3]
    assert load_config(tiny_config, ["evaluate.sigmas=[25]"])["evaluate"]["sigmas"] == [25]  # a new section
    for override, message in [("noise.choices.0.sigma=5", "noise is a list of 2"), ("noise.2.sigma=5", "list of 2"),
                              ("model.filters.x=5", "model.filters is 4, not a section")]:
        with pytest.raises(BfcnnError, match=message):
            load_config(tiny_config, [override])


def test_seed_config_maps_onto_ours():
    config = from_seed(SEED_CONFIG)
    assert config["dataset"]["type"] == "image_folder"
    assert not {"additional_noise", "multiplicative_noise", "clip_value", "random_blur"} & set(config["dataset"])
    choices = config["noise"]["choices"]
    assert choices[0] == {"type": "additive_gaussian", "sigma": [5, 10, 20], "value_range": 255.0, "clip": True}
    assert choices[1] == {"type": "multiplicative_gaussian", "sigma": [0.1, 0.15, 0.2], "blur": True, "clip": True}
    assert config["loss"]["type"] == "hinged_mae"
    assert config["train"]["optimizer"] == {"type": "adam", "learning_rate": 0.001}
    assert config["train"]["schedule"] == {"type": "exponential_decay", "decay_rate": 0.9, "decay_steps": 50000}
    assert config["train"]["gradient_clipping_by_norm"] == 1.0
    assert SEED_CONFIG["dataset"]["additional_noise"] == [5, 10, 20]  # the input is not modified


class OtherFormat:
    """A plugin's config format: another tool's `training:` section and `epochs` key, in bfcnn's form."""

    @hookimpl
    def register_config_formats(self, register):
        def adapt(config):
            if "training" not in config:
                return config
            config = {k: v for k, v in config.items() if k != "training"}
            training = config.pop("training_defaults", {})
            if not isinstance(training, dict):
                raise ConfigError(["training_defaults: not a mapping"])
            config["train"] = {"total_steps": 100 * int(training.get("epochs", 1))}
            return config
        register("other_tool", adapt, "another tool's keys")


def test_a_plugin_config_format_maps_its_configs_and_leaves_ours_alone(tiny_config):
    from bfcnn.registry import load_registries

    registries = load_registries(extra_plugins=[OtherFormat()], autoload=False)
    assert list(registries.config_formats) == ["seed", "other_tool"]  # the built-in first, then plugins
    assert registries.config_formats["seed"].plugin == "bfcnn.plugins.seed_format"
    theirs = {k: v for k, v in tiny_config.items() if k != "train"}
    config = load_config({**theirs, "training": {}, "training_defaults": {"epochs": 3}}, registries=registries)
    assert config["train"]["total_steps"] == 300 and "training" not in config
    assert load_config(tiny_config, registries=registries)["train"] == tiny_config["train"]  # ours: unchanged
    # both formats run: the seed's keys and the plugin's in one config
    seed_style = {**theirs, "training": {}, "loss": {}}
    assert load_config(seed_style, registries=registries)["loss"]["type"] == "hinged_mae"
    with pytest.raises(ConfigError, match="training_defaults: not a mapping"):
        load_config({**theirs, "training": {}, "training_defaults": [1]}, registries=registries)
    # without the plugin its keys are what they are: unknown sections, reported by the schema
    with pytest.raises(ConfigError, match="training"):
        load_config({**theirs, "training": {}})


def test_config_format_registrations_are_checked():
    from bfcnn.errors import DuplicateComponentError
    from bfcnn.registry import load_registries

    class Twice:
        @hookimpl
        def register_config_formats(self, register):
            register("seed", lambda config: config)

    with pytest.raises(DuplicateComponentError, match="config format 'seed' is registered twice"):
        load_registries(extra_plugins=[Twice()], autoload=False)

    class Broken:
        @hookimpl
        def register_config_formats(self, register):
            register("", lambda config: config)
            register("no_adapt", None)

    registries = load_registries(extra_plugins=[Broken()], autoload=False)
    assert list(registries.config_formats) == ["seed"] and "Broken" in registries.failures


def test_a_config_format_that_crashes_is_a_config_error_naming_it(tiny_config):
    """A loader nothing can crash: a plugin's adapt that raises anything becomes a clear ConfigError (exit 2)."""
    from bfcnn.registry import load_registries

    class Crashing:
        @hookimpl
        def register_config_formats(self, register):
            register("crashing", lambda config: config["nothing"], "fails on every config")

    registries = load_registries(extra_plugins=[Crashing()], autoload=False)
    with pytest.raises(ConfigError, match="config format 'crashing' .plugin 'Crashing'. failed: KeyError"):
        load_config(tiny_config, registries=registries)

    class NotAMapping:
        @hookimpl
        def register_config_formats(self, register):
            register("listy", lambda config: [config])

    registries = load_registries(extra_plugins=[NotAMapping()], autoload=False)
    with pytest.raises(ConfigError, match="config format 'listy' .plugin 'NotAMapping'. returned a list"):
        load_config(tiny_config, registries=registries)


def test_seed_config_validates_as_written(tmp_path):
    path = tmp_path / "seed.json"
    path.write_text(json.dumps(SEED_CONFIG))
    config = load_config(path)
    assert config["model"]["type"] == "resnet"


def test_seed_channel_mismatch_names_both_keys():
    seed = json.loads(json.dumps(SEED_CONFIG))
    seed["dataset"]["color_mode"] = "rgb"
    seed["dataset"]["input_shape"] = [256, 256, 3]
    problems = problems_of(seed)
    assert any("model.input_shape" in p and "dataset.color_mode" in p for p in problems)


@pytest.mark.parametrize("model, found", [({"type": "dncnn"}, True), ({"type": "resnet"}, True),
                                          ({"type": "resnet", "input_shape": ["?", "?", 1]}, False),
                                          ({"type": "dncnn", "channels": 1}, False)])
def test_a_model_left_at_its_default_channels_is_checked_against_the_data(model, found):
    """A 3-channel model by default on gray crops: caught when the config is read, not by a crash in training."""
    config = {"model": model, "dataset": {"type": "sample_images", "color_mode": "grayscale"}}
    if not found:
        assert load_config(config) == config
        return
    assert problems_of(config) == [f"model {model['type']!r} (by default): the model takes 3 channel(s) but "
                                   "dataset.color_mode gives 1"]


def test_an_even_kernel_size_is_refused_with_the_rule():
    for name in ("dncnn", "resnet", "unet"):
        assert problems_of({"model": {"type": name, "kernel_size": 4}}) == [
            "model.kernel_size: 4: must be odd (a 'same' convolution keeps the image's size)"]


def test_an_ssim_window_larger_than_the_crops_is_caught_before_the_data_is_read():
    config = {"loss": {"type": "ssim"}, "dataset": {"type": "sample_images", "input_shape": [8, 8, 1]}}
    assert problems_of(config) == ["loss.win_size: the ssim window (11) is larger than the crops of "
                                   "dataset.input_shape (8 x 8); use larger crops or a smaller odd window"]
    config["loss"]["win_size"] = 7
    assert load_config(config) == config
    config["loss"]["win_size"] = 6
    assert problems_of(config) == ["loss.win_size: 6: must be odd: the Gaussian window's size (crops must be at "
                                   "least this big)"]


def test_seed_noise_keys_and_a_noise_section_do_not_mix(tiny_config):
    tiny_config["dataset"]["additional_noise"] = [5]
    assert "dataset.additional_noise" in problems_of(tiny_config)[0]


def test_schema_is_a_valid_json_schema_with_every_component():
    schema = config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    for kind in bfcnn.KINDS:
        assert schema["$defs"][kind]["properties"]["type"]["enum"] == bfcnn.names(kind)


def test_build_validates_params_first():
    with pytest.raises(ConfigError, match="sigma"):
        bfcnn.build("noise", {"type": "additive_gaussian", "sigma": -1})
    noise = bfcnn.build("noise", "additive_gaussian")
    assert callable(noise)
