module gopkg.in/yaml.v3
